#!/usr/bin/env python3
"""Writes N generated tracks (about 40 lines each) for the check benchmark.

Usage: gen_tracks.py OUT_DIR [N] [--one-file]
Deterministic: the same N gives the same files. Every track checks clean
against tracks/schema.sql, so the benchmark measures the whole pipeline
(parse, SQL, schema resolution, typing, IR), not an early exit.
"""
import os
import random
import sys

TRACK = """// Generated track {n} for the check benchmark.
track bench_{n} version {version} {{
    source key id {{
        SELECT id, email, plan, score, country, signup_at, last_seen_at, opted_out
        FROM contacts
        WHERE signup_at > :last_run - INTERVAL '{days} days'
          AND plan IN ('free', 'trial', 'pro')
    }}

    on every {every}m
    on cron '{minute} {hour} * * 1-5' tz 'Europe/Berlin'
    on event signup_{n}

    step start {{
        when opted_out then end
        when plan = 'trial' and score >= {s1} then email 'hot-{n}', goto qualify
        when country in ('DE', 'AT', 'CH') and score between {s2} and {s3} then email 'dach-{n}', goto nurture
        when last_seen_at is null or now() - last_seen_at > {idle}d then goto revive
        else email 'welcome-{n}', goto nurture
    }}

    step nurture {{
        wait {wait}d
        when coalesce(last_seen_at, signup_at) < now() - 7d then webhook 'https://crm.example/hooks/{n}', goto revive
        when score > {s4} and lower(email) like '%@example.com' then
            sql {{ UPDATE contacts SET stage = 'qualified' WHERE id = :id }}, goto qualify
        when abs(score - {s5}) < 5 then emit near_{n}, stay
    }}

    step qualify {{
        else sql {{
            INSERT INTO tasks (contact_id, kind, note, created_at)
            VALUES (:id, 'call', 'generated {n}', :now)
        }}, emit qualified_{n}, end
    }}

    step revive {{
        wait 1w
        when last_seen_at > now() - 1d then goto nurture
        else email 'we-miss-you-{n}', end
    }}
}}
"""


def main():
    out = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    one_file = "--one-file" in sys.argv
    rng = random.Random(42)
    os.makedirs(out, exist_ok=True)
    texts = []
    for n in range(count):
        s2 = rng.randint(10, 40)
        texts.append(
            TRACK.format(
                n=n,
                version=rng.randint(1, 9),
                days=rng.randint(1, 90),
                every=rng.choice([5, 15, 30, 60]),
                minute=rng.randint(0, 59),
                hour=rng.randint(6, 18),
                s1=rng.randint(40, 90),
                s2=s2,
                s3=s2 + rng.randint(5, 30),
                idle=rng.randint(7, 60),
                wait=rng.randint(1, 5),
                s4=rng.randint(50, 95),
                s5=rng.randint(0, 100),
            )
        )
    if one_file:
        with open(os.path.join(out, "all.dt"), "w") as f:
            f.write("\n".join(texts))
    else:
        for n, text in enumerate(texts):
            with open(os.path.join(out, f"bench_{n:04}.dt"), "w") as f:
                f.write(text)


if __name__ == "__main__":
    main()
