"""Passwords are hashed with Argon2; older PBKDF2 hashes are upgraded at the next login."""

import pytest
from django.contrib.auth.hashers import identify_hasher, make_password

from tenancy.models import User
from tests.factories import PASSWORD


def hasher_of(user: User) -> str:
    user.refresh_from_db()
    return identify_hasher(user.password).algorithm


def test_a_new_password_is_hashed_with_argon2(db):
    user = User.objects.create_user(email="dana@example.com", password=PASSWORD, name="Dana")
    assert hasher_of(user) == "argon2"


@pytest.mark.django_db(transaction=True)
def test_a_pbkdf2_hash_is_rehashed_with_argon2_when_the_user_logs_in(client, alice):
    pbkdf2 = make_password(PASSWORD, hasher="pbkdf2_sha256")
    User.objects.filter(pk=alice.pk).update(password=pbkdf2)
    assert hasher_of(alice) == "pbkdf2_sha256"

    response = client.post("/admin/login/", {"username": alice.email, "password": PASSWORD})

    assert response.status_code == 302
    assert hasher_of(alice) == "argon2"
