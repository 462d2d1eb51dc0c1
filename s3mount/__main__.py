"""`python -m s3mount` is the s3mount command."""

from .cli import main

main()
