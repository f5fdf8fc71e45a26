<?xml version="1.0" encoding="UTF-8"?>
<!-- Tries to include a stylesheet from the server's disk. INCLUDED is replaced by the test. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:include href="INCLUDED"/>
  <xsl:template match="/"><included/></xsl:template>
</xsl:stylesheet>
