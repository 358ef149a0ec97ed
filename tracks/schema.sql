-- The contact database the example tracks work on (PostgreSQL dialect).
CREATE TABLE contacts (
    id            BIGINT PRIMARY KEY,
    email         TEXT NOT NULL,
    name          TEXT,
    plan          TEXT NOT NULL,            -- 'free' | 'trial' | 'pro' | 'enterprise'
    score         INTEGER NOT NULL DEFAULT 0,
    country       TEXT,
    stage         TEXT NOT NULL DEFAULT 'new',
    signup_at     TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ,
    opted_out     BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE subscriptions (
    id           BIGINT PRIMARY KEY,
    contact_id   BIGINT NOT NULL REFERENCES contacts (id),
    plan         TEXT NOT NULL,
    mrr          NUMERIC(10, 2) NOT NULL,
    renews_at    TIMESTAMPTZ NOT NULL,
    auto_renew   BOOLEAN NOT NULL DEFAULT TRUE,
    cancelled_at TIMESTAMPTZ
);

CREATE TABLE invoices (
    id          BIGINT PRIMARY KEY,
    contact_id  BIGINT NOT NULL REFERENCES contacts (id),
    amount      NUMERIC(10, 2) NOT NULL,
    due_at      TIMESTAMPTZ NOT NULL,
    paid_at     TIMESTAMPTZ,
    attempts    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE orders (
    id          BIGINT PRIMARY KEY,
    contact_id  BIGINT NOT NULL REFERENCES contacts (id),
    total       NUMERIC(10, 2) NOT NULL,
    status      TEXT NOT NULL,
    placed_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE tasks (
    id          BIGSERIAL PRIMARY KEY,
    contact_id  BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    note        TEXT,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX contacts_signup_at ON contacts (signup_at);
