"""The inbox edge: what labeling tools export, turned into dataset versions, and nothing lost.

`service.ingest_batch` is the entry point. A dropped batch (`source`: a folder, or an archive
unpacked safely by `archives`) is listed (`layout`), its format read into samples
(`formats/`: YOLO, COCO, VOC), each sample checked and stored (`accept`: `images`, `labels`,
near copies in `dedupe`), and every file placed exactly once (`report`: versioned,
quarantined with a `reasons.Code`, or ignored) by `batchrun`. `quarantine` and `commands` list
and retry what was refused; `watcher` says when a dropped batch is complete.
"""
