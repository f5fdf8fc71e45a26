<?xml version="1.0" encoding="UTF-8"?>
<!-- Calls a function in a namespace of its own: no such extension may run. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:sys="urn:example:system">
  <xsl:template match="/">
    <out><xsl:value-of select="sys:exec('id')"/></out>
  </xsl:template>
</xsl:stylesheet>
