"""Inserts the row the benchmarked view reads, so ``migrate`` alone prepares the db."""

from django.db import migrations


def seed(apps, schema_editor) -> None:
    greeting = apps.get_model("bench", "Greeting")
    greeting.objects.update_or_create(
        pk=1, defaults={"name": "forkserve", "message": "Hello from the Django bench."}
    )


class Migration(migrations.Migration):
    dependencies = [("bench", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
