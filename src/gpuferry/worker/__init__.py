"""The detached worker that runs a job's segments where the GPU is (`python -m gpuferry.worker`)."""
