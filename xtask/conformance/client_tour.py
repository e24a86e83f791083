"""The README's tour, through a client generated from the served OpenAPI document.

`cargo xtask conformance` generates the client with openapi-python-client, installs it and
runs this script against the server it started: what a tenant administrator will actually do
with the document. Any step that does not answer as the README says fails the run.

Usage: python client_tour.py BASE_URL ADMIN_TOKEN
"""

import sys

from iam_service_accounts_client import AuthenticatedClient, Client
from iam_service_accounts_client.api.auth import mint_token
from iam_service_accounts_client.api.serviceaccounts import (
    create_service_account,
    create_service_account_credential,
    delete_service_account,
    delete_service_account_credential,
    get_service_account,
    list_service_account_credentials,
    list_service_accounts,
    update_service_account,
)
from iam_service_accounts_client.models import (
    CreateCredentialBody,
    CreateServiceAccountBody,
    CreatedCredential,
    GrantType,
    PatchServiceAccountBody,
    Scope,
    ServiceAccount,
    ServiceAccountStatus,
    TokenRequestBody,
    TokenResponse,
)


def expect(step, response, status):
    if response.status_code != status:
        sys.exit(f"{step}: expected HTTP {status}, got {response.status_code}: {response.content!r}")
    print(f"ok  {step}: HTTP {status}")
    return response.parsed


def main(base_url, token):
    admin = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)

    # Create a service account scoped to the project "web", with a role the admin holds.
    created = expect(
        "create a service account",
        create_service_account.sync_detailed(
            client=admin,
            body=CreateServiceAccountBody(
                display_name="Web deployer",
                scope=Scope.PROJECT,
                scope_id="web",
                roles=["compute.deployer"],
            ),
        ),
        201,
    )
    assert isinstance(created, ServiceAccount), created
    assert created.id.startswith("sa-") and created.roles == ["compute.deployer"], created

    # List the tenant's service accounts.
    listed = expect("list service accounts", list_service_accounts.sync_detailed(client=admin), 200)
    assert created.id in [account.id for account in listed.service_accounts], listed

    # Get one; change the description and the roles; disable it and enable it again.
    expect("get it", get_service_account.sync_detailed(created.id, client=admin), 200)
    patched = expect(
        "change its description and roles",
        update_service_account.sync_detailed(
            created.id,
            client=admin,
            body=PatchServiceAccountBody(
                description="Deploys the web project", roles=["compute.deployer", "storage.reader"]
            ),
        ),
        200,
    )
    assert patched.description == "Deploys the web project", patched
    for status in (ServiceAccountStatus.DISABLED, ServiceAccountStatus.ACTIVE):
        changed = expect(
            f"set its status to {status}",
            update_service_account.sync_detailed(
                created.id, client=admin, body=PatchServiceAccountBody(status=status)
            ),
            200,
        )
        assert changed.status == status, changed

    # Create a client secret: shown in this response only.
    credential = expect(
        "create a client secret",
        # An empty body: the org's default lifetime. (The generated client cannot send none.)
        create_service_account_credential.sync_detailed(
            created.id, client=admin, body=CreateCredentialBody()
        ),
        201,
    )
    assert isinstance(credential, CreatedCredential), credential
    assert credential.client_secret.startswith("plt_cs_"), "no client secret"

    # The workload's side: mint an access token with the secret.
    minted = expect(
        "mint an access token with it",
        mint_token.sync_detailed(
            client=Client(base_url=base_url),
            body=TokenRequestBody(
                grant_type=GrantType.CLIENT_CREDENTIALS,
                client_id=created.client_id,
                client_secret=credential.client_secret,
            ),
        ),
        200,
    )
    assert isinstance(minted, TokenResponse) and minted.token_type == "Bearer", minted

    # List its credentials (never with secrets) and delete the one just made.
    credentials = expect(
        "list its credentials",
        list_service_account_credentials.sync_detailed(created.id, client=admin),
        200,
    )
    assert [c.id for c in credentials.credentials] == [credential.id], credentials
    expect(
        "delete the credential",
        delete_service_account_credential.sync_detailed(created.id, credential.id, client=admin),
        204,
    )

    # Delete the account: 204, then 404.
    expect("delete the account", delete_service_account.sync_detailed(created.id, client=admin), 204)
    admin_lenient = AuthenticatedClient(base_url=base_url, token=token)
    expect("get it again", get_service_account.sync_detailed(created.id, client=admin_lenient), 404)
    print("the tour through the generated client passed")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
