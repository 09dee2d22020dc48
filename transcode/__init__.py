"""Media work: probe, segmenter, playlists, renditions, clip cutter, episode renderer.

transcode never imports boto3: it reads and writes local files and hands them to storage.
"""
