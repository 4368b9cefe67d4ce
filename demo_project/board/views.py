import json

from django.http import HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from .models import Note, Task


def index(request):
    # The lists are filled by the page itself: instant.collection(...) loads them from
    # instant/collection/ together with the stream position, so no event falls in between.
    return render(request, "board/index.html")


def _body(request):
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _task_json(task):
    return {"id": task.id, "title": task.title, "done": task.done, "owner": task.owner_id}


@require_POST
def add_note(request):
    text = str(_body(request).get("text", "")).strip()[:280]
    if not text:
        return JsonResponse({"error": "text is required"}, status=400)
    author = request.user.get_username() if request.user.is_authenticated else "anonymous"
    note = Note.objects.create(text=text, author=author)
    return JsonResponse({"id": note.id}, status=201)


def tasks(request):
    if not request.user.is_authenticated:
        return JsonResponse({"error": "log in first"}, status=403)
    if request.method == "GET":
        return JsonResponse({"tasks": [_task_json(t) for t in request.user.tasks.all()]})
    if request.method != "POST":
        return HttpResponseNotAllowed(["GET", "POST"])
    title = str(_body(request).get("title", "")).strip()[:200]
    if not title:
        return JsonResponse({"error": "title is required"}, status=400)
    task = Task.objects.create(title=title, owner=request.user)
    return JsonResponse(_task_json(task), status=201)


@require_POST
def toggle_task(request, pk):
    if not request.user.is_authenticated:
        return JsonResponse({"error": "log in first"}, status=403)
    task = get_object_or_404(Task, pk=pk, owner=request.user)
    task.done = not task.done
    task.save()
    return JsonResponse(_task_json(task))
