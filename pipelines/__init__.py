"""SageMaker Pipelines of the kit and the console scripts that build, upsert and run them."""
