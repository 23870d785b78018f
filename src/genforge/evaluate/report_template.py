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
</style>
</head>
<body>
<h1>genforge run report: $title</h1>
<p class="muted">$subtitle</p>
<h2>Samples beside real images</h2>
$samples
<h2>Metrics</h2>
$metrics
<h2>Training curves</h2>
$curves
<h2>Memorisation audit: closest training images</h2>
$memorisation
<h2>Data quality of the training set</h2>
$data_quality
<p class="muted">Written by <code>genforge report</code> on $created.</p>
</body>
</html>
"""
