from fireplug.cli import entry

entry()
