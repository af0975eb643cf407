"""Root of the test run: gevent first (as in production), then the shared fixture modules."""
from gevent import monkey

monkey.patch_all()

pytest_plugins = ["tests.harness", "tests.post_call_world"]
