import hashlib
import os
import re

from django.apps import apps
from django.conf import settings
from django.http import FileResponse, Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .forms import ItemForm, UploadForm
from .models import Item

SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def index(request):
    return render(request, "shop/index.html", {"items": Item.objects.all()})


def item_detail(request, pk):
    return render(request, "shop/detail.html", {"item": get_object_or_404(Item, pk=pk)})


def items_json(request):
    items = [{"id": i.id, "name": i.name, "price": str(i.price)} for i in Item.objects.all()]
    return JsonResponse({"items": items, "pid": os.getpid()})


def new_item(request):
    """The classic form round trip: GET the form, POST it back with its CSRF token."""
    if request.method == "POST":
        form = ItemForm(request.POST)
        if form.is_valid():
            item = form.save()
            return redirect("item-detail", pk=item.pk)
        status = 400
    else:
        form = ItemForm()
        status = 200
    return render(request, "shop/new.html", {"form": form}, status=status)


@csrf_exempt
@require_POST
def upload(request):
    """An API-style endpoint: no CSRF token, answers with what it received."""
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors}, status=400)
    uploaded = form.cleaned_data["file"]
    digest = hashlib.sha256()
    for piece in uploaded.chunks():
        digest.update(piece)
    return JsonResponse(
        {
            "name": uploaded.name,
            "size": uploaded.size,
            "sha256": digest.hexdigest(),
            "note": request.POST.get("note", ""),
            "on_disk": hasattr(uploaded, "temporary_file_path"),
        }
    )


def stream(request):
    count = int(request.GET.get("count", "5"))

    def lines():
        for i in range(count):
            yield f"line {i} of {count}\n".encode()

    return StreamingHttpResponse(lines(), content_type="text/plain")


def download(request, name):
    if not SAFE_NAME.fullmatch(name):
        raise Http404("bad name")
    path = settings.DOWNLOAD_DIR / name
    if not path.is_file():
        raise Http404("no such file")
    return FileResponse(open(path, "rb"), as_attachment=True, filename=name)


def greet(request, name):
    return JsonResponse({"name": name, "path": request.path, "method": request.method})


def process(request):
    return JsonResponse({"pid": os.getpid(), "ready_pid": apps.get_app_config("shop").ready_pid})


def broken(request):
    raise ValueError("this view fails on purpose")
