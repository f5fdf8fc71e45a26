<?xml version="1.0" encoding="UTF-8"?>
<!-- Tries to write a file with XSLT 1.1's xsl:document (libxslt knows it; no extension
     declaration needed). TARGET is replaced by the test. -->
<xsl:stylesheet version="1.1" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/">
    <xsl:document href="TARGET" method="text">written by a stylesheet</xsl:document>
    <done/>
  </xsl:template>
</xsl:stylesheet>
