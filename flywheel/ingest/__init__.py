"""The inbox edge: what labeling tools export, turned into dataset versions, and nothing lost.

`pipeline.ingest_batch` is the entry point. A dropped batch (`source`: a folder, or an archive
unpacked safely by `archives`) is listed (`layout`), its format read into samples
(`formats/`: YOLO, COCO, VOC), each sample checked and stored (`accept`: `images`, `labels`,
near copies in `dedupe`), and every file placed exactly once (`report`: versioned,
quarantined with a `reasons.Code`, or ignored) by `batchrun`. `quarantine` lists and retries
what was refused (for the `flywheel quarantine` commands in flywheel/cli/data.py); `watcher`
says when a dropped batch is complete.
"""
