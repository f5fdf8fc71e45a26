<?xml version="1.0" encoding="UTF-8"?>
<!-- EXSLT's str:padding, built into libxslt, asked for 2 GB in an attribute value template. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:str="http://exslt.org/strings">
  <xsl:template match="/">
    <out padding="{str:padding(2147483647, 'x')}"/>
  </xsl:template>
</xsl:stylesheet>
