<?xml version="1.0" encoding="UTF-8"?>
<!-- Tries to write a file with EXSLT's exsl:document. TARGET is replaced by the test. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:exsl="http://exslt.org/common" extension-element-prefixes="exsl">
  <xsl:template match="/">
    <exsl:document href="TARGET" method="text">written by a stylesheet</exsl:document>
    <done/>
  </xsl:template>
</xsl:stylesheet>
