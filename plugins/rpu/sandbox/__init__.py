"""The sandbox: the demo region, the local PostgreSQL/SFTP/SMTP servers and the file generator.

Only the demo (``make run``) and the tests use it.
"""
