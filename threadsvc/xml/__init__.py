"""Every XML document threadsvc reads or writes goes through here; only this package imports lxml."""
