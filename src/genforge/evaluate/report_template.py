"""The run report's HTML page (string.Template; every image is inlined, so the file stands alone)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>genforge report: $title</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
 h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.8em; }
 table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
 th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
 th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
 .pair { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
 .pair figure { margin: 0; } figcaption { font-size: .9em; color: #555; margin-top: .3em; }
 img.px { image-rendering: pixelated; border: 1px solid #ccc; }
 .muted { color: #666; } .warn { color: #a15c00; } .flag { color: #b00020; font-weight: bold; }
 code { background: #f4f4f4; padding: 0 .2em; }
 pre.sample { white-space: pre-wrap; background: #fafafa; border: 1px solid #ddd; padding: .5em; margin: .3em 0 1.2em; }
 pre.sample .prompt { color: #666; } mark { background: #ffd54f; }
</style>
</head>
<body>
<h1>genforge run report: $title</h1>
<p class="muted">$subtitle</p>
$sections
<p class="muted">Written by <code>genforge report</code> on $created.</p>
</body>
</html>
"""
