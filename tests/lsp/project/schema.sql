CREATE TABLE contacts (
    id BIGINT PRIMARY KEY,
    email TEXT NOT NULL,
    score INT NOT NULL,
    note TEXT
);
