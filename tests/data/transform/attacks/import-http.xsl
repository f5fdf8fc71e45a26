<?xml version="1.0" encoding="UTF-8"?>
<!-- Tries to import a stylesheet over HTTP. PORT is replaced by the test's listener. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:import href="http://127.0.0.1:PORT/evil.xsl"/>
  <xsl:template match="/"><imported/></xsl:template>
</xsl:stylesheet>
