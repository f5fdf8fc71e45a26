<?xml version="1.0" encoding="UTF-8"?>
<!-- Tries to fetch a document over HTTP. PORT is replaced by the test's listener. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/">
    <fetched><xsl:copy-of select="document('http://127.0.0.1:PORT/secret.xml')"/></fetched>
  </xsl:template>
</xsl:stylesheet>
