"""Media: the camera's H.264 and the microphone's sound as files — the segmenter that cuts
the admitted stream into self-contained fragmented-MP4 segments (``segmenter``), the MP4
helpers every writer shares (``mp4``), just enough H.264 to cut on keyframes (``h264``),
and cutting stored segments to a scope without re-encoding (``cut``).

It knows nothing of the vault: a segment is written to whatever ``store`` hands out.
"""
