<?xml version="1.0" encoding="UTF-8"?>
<!-- Identity, inside a <copy> element that shows the stylesheet parameters it was given. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml" encoding="UTF-8"/>
  <xsl:param name="who" select="'nobody'"/>
  <xsl:param name="note.text" select="'none'"/>

  <xsl:template match="/">
    <copy who="{$who}" note="{$note.text}">
      <xsl:apply-templates/>
    </copy>
  </xsl:template>

  <xsl:template match="@*|node()">
    <xsl:copy>
      <xsl:apply-templates select="@*|node()"/>
    </xsl:copy>
  </xsl:template>
</xsl:stylesheet>
