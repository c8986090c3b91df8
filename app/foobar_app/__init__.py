"""foobar_app: the small WSGI application that webstack deploys to www.foobar.com."""

__all__ = ["config", "store", "web"]
