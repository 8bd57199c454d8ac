-- The database Airbyte's acceptance tests read (see acceptance-test-config.yml).
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, balance numeric, signed_up timestamptz, tags jsonb);
INSERT INTO users
SELECT g, 'user' || g || '@example.com', g * 10.5, TIMESTAMPTZ '2024-01-01 00:00:00+00' + g * interval '1 day',
       jsonb_build_array('t' || g)
FROM generate_series(1, 25) g;
