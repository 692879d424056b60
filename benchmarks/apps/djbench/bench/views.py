"""The benchmarked view: one primary-key read from SQLite, answered as JSON."""

from django.http import HttpRequest, JsonResponse

from bench.models import Greeting


def greeting(request: HttpRequest) -> JsonResponse:
    row = Greeting.objects.get(pk=1)
    return JsonResponse({"id": row.pk, "name": row.name, "message": row.message, "created": row.created})
