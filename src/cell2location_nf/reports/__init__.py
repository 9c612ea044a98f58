"""QC reports: papermill-rendered notebooks, their MultiQC artefacts and the report's summary sections."""
