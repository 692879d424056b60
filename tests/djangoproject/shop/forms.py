from django import forms

from .models import Item


class ItemForm(forms.ModelForm):
    class Meta:
        model = Item
        fields = ["name", "price"]


class UploadForm(forms.Form):
    file = forms.FileField()
