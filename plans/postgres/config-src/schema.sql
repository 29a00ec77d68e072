-- Run before the restore: the database the dump is restored into.
CREATE DATABASE shop OWNER app;
