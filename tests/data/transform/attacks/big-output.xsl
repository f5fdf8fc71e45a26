<?xml version="1.0" encoding="UTF-8"?>
<!-- Doubles a 16-byte string 23 times: 128 MiB of text output, above the 64 MiB cap. The
     number of doublings comes from the document's `times` attribute. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="text"/>
  <xsl:template match="/">
    <xsl:call-template name="double">
      <xsl:with-param name="text" select="'0123456789abcdef'"/>
      <xsl:with-param name="times" select="number(/*/@times)"/>
    </xsl:call-template>
  </xsl:template>
  <xsl:template name="double">
    <xsl:param name="text"/>
    <xsl:param name="times"/>
    <xsl:choose>
      <xsl:when test="$times &lt;= 0"><xsl:value-of select="$text"/></xsl:when>
      <xsl:otherwise>
        <xsl:call-template name="double">
          <xsl:with-param name="text" select="concat($text, $text)"/>
          <xsl:with-param name="times" select="$times - 1"/>
        </xsl:call-template>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:template>
</xsl:stylesheet>
