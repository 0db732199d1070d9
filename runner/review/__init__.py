"""Review: choose among a run's outputs, record the choice beside the manifest, export it.

::

    runs/<run>/report.json (or its journal, while it runs) ─runs.py─▶ what the viewer shows
    <manifest stem>.picks.json ◀─picks.py─▶ verdicts (pick / reject, stars, note)
    current plan + picks + earlier runs ─export.py─▶ DIR/…, DIR/provenance.json
    app.py: the Starlette app of ``seedbatch view`` (static/: its page, script and style)

``picks.py``, ``compare.py`` and the planning half of ``export.py`` are pure functions over
plain documents; reading run directories, locking and copying are the thin shell around
them.
"""
