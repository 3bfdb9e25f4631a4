x = "ÿþ not utf-8 and no cookie"
