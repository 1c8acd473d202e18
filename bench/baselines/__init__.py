"""What cocaine is measured against: a plain ZeroMQ broker, process pools, Celery."""
