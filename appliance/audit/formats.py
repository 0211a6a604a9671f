"""The audit log's export formats, alone so that the CLI's help can name them without loading the exporter."""

FORMATS = ("jsonl", "csv")
