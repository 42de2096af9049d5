"""Why a file was quarantined, ignored, or changed on its way in: one bounded set of codes.

Every line of a quarantine report carries a `Code` beside the sentence a person reads. The
codes are stable (dashboards and the Prometheus label `reason` use them), short, and few: a
new kind of problem gets a new member here, never a free-form string.
"""

from __future__ import annotations

from enum import StrEnum

from flywheel.core.errors import BatchRejected


class Code(StrEnum):
    # --- the whole batch is refused ------------------------------------------------------
    BATCH_EMPTY = "batch_empty"
    BATCH_NOT_A_BATCH = "batch_not_a_batch"  # a single file in the inbox that is no archive
    NO_CLASS_NAMES = "no_class_names"
    CLASS_NAMES_BAD = "class_names_bad"  # unreadable class file, empty or repeated names
    CLASS_CONFLICT = "class_conflict"  # a name the project's map cannot take (case/space twin)
    ANNOTATIONS_UNREADABLE = "annotations_unreadable"  # a COCO file that does not parse
    ARCHIVE_UNREADABLE = "archive_unreadable"
    ARCHIVE_TOO_LARGE = "archive_too_large"
    ZIP_SLIP = "zip_slip"  # a member with an absolute path or `..`
    LINK_OUTSIDE = "link_outside"  # a symlink or hard link pointing outside the batch
    # --- one image ------------------------------------------------------------------------
    IMAGE_EMPTY = "image_empty"
    IMAGE_NOT_IMAGE = "image_not_image"
    IMAGE_CORRUPT = "image_corrupt"
    IMAGE_UNSUPPORTED = "image_unsupported_format"
    IMAGE_TOO_LARGE = "image_too_large"  # pixel count above ingest.max_image_pixels
    IMAGE_EXTENSION_MISMATCH = "image_extension_mismatch"
    IMAGE_EXIF_MISMATCH = "image_exif_mismatch"  # boxes drawn on the unrotated frame
    IMAGE_UNLABELED = "image_unlabeled"
    IMAGE_DUPLICATE = "image_duplicate_in_batch"
    # --- one label --------------------------------------------------------------------------
    LABEL_UNREADABLE = "label_unreadable"
    LABEL_BAD_FIELDS = "label_bad_fields"
    LABEL_NOT_NUMERIC = "label_not_numeric"
    LABEL_NOT_FINITE = "label_not_finite"
    LABEL_OUT_OF_RANGE = "label_out_of_range"
    LABEL_BAD_SIZE = "label_bad_size"  # negative width or height
    LABEL_UNKNOWN_CLASS = "label_unknown_class"
    LABEL_SIZE_MISMATCH = "label_size_mismatch"  # annotation's image size is not the image's
    LABEL_ORPHAN = "label_orphan"  # a label no image in the batch claims
    LABEL_AMBIGUOUS = "label_ambiguous"  # one label claimed by two images, or two labels for one
    LABEL_NO_BOX_LEFT = "label_no_box_left"  # every box was dropped: not a negative image by accident
    # --- any file ---------------------------------------------------------------------------
    PARTNER_REFUSED = "partner_refused"  # the other half of a refused image/label pair
    FILE_UNSUPPORTED = "file_unsupported"
    CLASS_FILE_EXTRA = "class_file_extra"
    LINK = "link"  # a symlink inside the batch: never followed
    SPECIAL_FILE = "special_file"  # device, fifo, socket
    # --- ignored (neither data nor error) --------------------------------------------------
    MARKER = "marker"
    IGNORE_LIST = "ignore_list"
    EXPORT_METADATA = "export_metadata"  # README.roboflow.txt, ImageSets/, obj.data, ...
    # --- notes: accepted, but changed or worth knowing ---------------------------------------
    BOX_CLIPPED = "box_clipped"
    BOX_ZERO_SIZE = "box_zero_size"
    BOX_DUPLICATE = "box_duplicate"
    BOX_CROWD = "box_crowd"
    POLYGON_TO_BOX = "polygon_to_box"
    EXIF_APPLIED = "exif_applied"
    NEAR_DUPLICATE = "near_duplicate"
    IMAGE_MISSING = "image_missing"  # an annotation names an image the batch does not hold


class Problem(ValueError):
    """A file that cannot be used: `code` for machines, str() for people."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code


class BatchRefused(BatchRejected):
    """The whole batch is refused; `code` says why (one of the batch codes above)."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
