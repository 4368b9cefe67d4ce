"""Create the demo's users (and a few rows to look at) and print their logins."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from board.models import Note, Task
from instant_signals import disable_broadcasts

USERS = [
    # username, password, staff, superuser
    ("alice", "alice-demo", False, False),
    ("bob", "bob-demo", False, False),
    ("admin", "admin-demo", True, True),
]


class Command(BaseCommand):
    help = "Create the demo users alice, bob and admin (idempotent) and print their logins."

    def handle(self, *args, **options):
        User = get_user_model()
        with disable_broadcasts():  # Centrifugo may not be running yet
            for username, password, staff, superuser in USERS:
                user, _ = User.objects.get_or_create(username=username)
                user.is_staff = staff
                user.is_superuser = superuser
                user.set_password(password)
                user.save()
            if not Note.objects.exists():
                Note.objects.create(text="Welcome! Notes here are public: everyone sees them live.",
                                    author="admin")
            alice = User.objects.get(username="alice")
            if not Task.objects.filter(owner=alice).exists():
                Task.objects.create(title="Only alice sees this task", owner=alice)
        self.stdout.write("Demo logins (username / password):")
        for username, password, staff, superuser in USERS:
            role = "superuser, staff channel, admin site" if superuser else "regular user"
            self.stdout.write(f"  {username:6} / {password:11} ({role})")
