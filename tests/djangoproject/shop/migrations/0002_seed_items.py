from decimal import Decimal

from django.db import migrations

SEED = [("Teapot", Decimal("18.50")), ("Kettle", Decimal("42.00")), ("Mug", Decimal("6.25"))]


def add_items(apps, schema_editor):
    Item = apps.get_model("shop", "Item")
    Item.objects.bulk_create(Item(name=name, price=price) for name, price in SEED)


def remove_items(apps, schema_editor):
    Item = apps.get_model("shop", "Item")
    Item.objects.filter(name__in=[name for name, _ in SEED]).delete()


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [migrations.RunPython(add_items, remove_items)]
