CREATE TABLE contacts (
    id      BIGINT PRIMARY KEY,
    email   TEXT,
    plan    TEXT NOT NULL,
    score   BIGINT NOT NULL,
    country TEXT NOT NULL
);
