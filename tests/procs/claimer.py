"""A separate process that races for jobs: claims until none is left and completes each,
writing the ids it claimed to stdout, one a line (negated when completing it failed).
Used by the claim race tests.

    python -m tests.procs.claimer DATABASE_URL GREENLETS START_AT

All racers start at START_AT (Unix time), so that none is done before the others are up.
"""
if __name__ == "__main__":  # patch before anything imports socket; importing the module patches nothing
    from gevent import monkey

    monkey.patch_all()

import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from services.store.db import Database  # noqa: E402
from services.post_call import jobs  # noqa: E402


def claim_all(db: Database, done: list[int]) -> None:
    idle = 0
    while idle < 20:  # a claim race: stop once nothing has been claimable for a while
        claim = jobs.claim_next(db, lease_s=600)
        if claim is None:
            idle += 1
            gevent.sleep(0.02)
            continue
        idle = 0
        done.append(claim.job_id)
        with db.session() as session:
            if not jobs.complete(session, claim):
                done.append(-claim.job_id)  # someone else holds a job this racer claimed: a broken claim


def main() -> None:
    db = Database(sys.argv[1])
    done: list[int] = []
    gevent.sleep(max(0.0, float(sys.argv[3]) - time.time()))
    gevent.joinall([gevent.spawn(claim_all, db, done) for _ in range(int(sys.argv[2]))], raise_error=True)
    sys.stdout.write("".join(f"{job_id}\n" for job_id in done))
    db.dispose()


if __name__ == "__main__":
    main()
