-- Roles the application needs; the password comes from the plan's secrets.
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN
    CREATE ROLE app LOGIN;
  END IF;
END $$;
ALTER ROLE app PASSWORD :'app_password';
