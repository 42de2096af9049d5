"""Adapters to labeling tools (Label Studio) behind the core's LabelingTool port."""
