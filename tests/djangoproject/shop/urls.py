from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("items/<int:pk>/", views.item_detail, name="item-detail"),
    path("items.json", views.items_json, name="items-json"),
    path("items/new/", views.new_item, name="new-item"),
    path("upload/", views.upload, name="upload"),
    path("stream/", views.stream, name="stream"),
    path("download/<str:name>", views.download, name="download"),
    path("process/", views.process, name="process"),
    path("broken/", views.broken, name="broken"),
    path("greet/<str:name>/", views.greet, name="greet"),
]
