"""The deepfake pipeline: ``pipeline.get_pipeline``, its code bundle and the step entry point."""
