"""Programs that run inside containers (standard library and boto3 only): the sync helper, the S3 object layout and transfers both ends use, the swarm task."""
