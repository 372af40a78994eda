"""A fake DigitalOcean API for the demo, the tests and the benchmark."""

from etl.fake.server import FakeApi
from etl.fake.world import World

__all__ = ["FakeApi", "World"]
