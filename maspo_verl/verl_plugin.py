"""Target of the `verl.plugins` entry point: verl imports it on `import verl` in every process
(driver, TaskRunner, Ray workers), and importing it registers maspo-verl."""

from .registration import register

register()
