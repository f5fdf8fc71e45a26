<?xml version="1.0" encoding="UTF-8"?>
<!-- Slow on purpose: 2^depth template calls for each document (depth from the document). -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="text"/>
  <xsl:template match="/">
    <xsl:call-template name="work">
      <xsl:with-param name="depth" select="number(/*/@depth)"/>
    </xsl:call-template>
    <xsl:text>done</xsl:text>
  </xsl:template>
  <xsl:template name="work">
    <xsl:param name="depth"/>
    <xsl:if test="$depth &gt; 0">
      <xsl:call-template name="work"><xsl:with-param name="depth" select="$depth - 1"/></xsl:call-template>
      <xsl:call-template name="work"><xsl:with-param name="depth" select="$depth - 1"/></xsl:call-template>
    </xsl:if>
  </xsl:template>
</xsl:stylesheet>
