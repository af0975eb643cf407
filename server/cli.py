"""`flask --app app db upgrade` and `flask --app app demo-business`."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from server.request_db import get_db
from server.demo import create_demo_business

db_cli = AppGroup("db", help="Database schema.")


@db_cli.command("upgrade")
def upgrade() -> None:
    """Apply every pending migration."""
    get_db().upgrade()
    click.echo("database is at the newest schema")


@click.command("demo-business")
@click.option("--number", default="+15005550006", show_default=True, help="E.164 number Twilio calls.")
def demo_business(number: str) -> None:
    """Create (or show) a demo business answering NUMBER, so that you can call at once."""
    db = get_db()
    db.upgrade()
    with db.session() as session:
        business, created = create_demo_business(session, number)
        click.echo(f"{'created' if created else 'exists'}: business {business.id} '{business.name}' answers {number}")


def init_app(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(demo_business)
