"""The project's error type, in a module that imports nothing of the project.

`ConfigError` is raised for any bad input a user can fix: a config value, a
flag, a path that does not exist or cannot be written. Its message is one line
that names the field or the path. Every module may import this one; it imports
none of them, so no import cycle can pass through it.
"""


class ConfigError(ValueError):
  """A config value (or a path it names) that cannot work; message is one line."""
