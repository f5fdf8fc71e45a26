<?xml version="1.0" encoding="UTF-8"?>
<!-- Tries to copy a local file into the output. SECRET_URL is replaced by the test. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/">
    <stolen>
      <xsl:copy-of select="document('SECRET_URL')"/>
    </stolen>
  </xsl:template>
</xsl:stylesheet>
