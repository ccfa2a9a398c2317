#!/bin/bash
# Start the region's SFTP server: host key and concentrator password from the environment
# (.env), one chrooted account per line of comptes.conf, one folder per establishment.
#
#   /srv/sftp/                      chroot of the concentrator's account rpu (owned by root)
#   /srv/sftp/<FINESS>/             chroot of the establishment's account e<finess> (owned by root)
#   /srv/sftp/<FINESS>/depot/       where the establishment drops its files
#   /srv/sftp/<FINESS>/traites/     files loaded, with their report
#   /srv/sftp/<FINESS>/rejetes/     files refused, with their report
#   /srv/sftp/<FINESS>/attente/     files held for the ORU (they would empty or halve days we hold)
#   /srv/sftp/<FINESS>/rapports/    the weekly establishment report
# (all made here: the chroot's root folder is root's, so the concentrator cannot create them later)
#
# Every account shares one uid (the chroots keep the establishments apart), so a file an
# establishment uploads with any permission stays readable by the concentrator.
# Extra arguments are passed to sshd (e.g. -p 2022).
set -euo pipefail

ROOT=${SFTP_ROOT:-/srv/sftp}
CONF_DIR=${SFTP_CONF_DIR:-/etc/rpu-sftp}
KEYS_DIR=${SFTP_KEYS_DIR:-/etc/ssh/authorized_keys}
SSH_DIR=${SFTP_SSH_DIR:-/etc/ssh}
SHARED_ID=${SFTP_UID:-2000}

say() { echo "rpu-sftp: $*" >&2; }
die() { say "$*"; exit 1; }

[ -n "${SFTP_HOST_KEY:-}" ] || die "SFTP_HOST_KEY manquant (.env) : clé d'hôte du serveur, générée par rpu region init"
[ -n "${SFTP_RPU_PASSWORD:-}" ] || die "SFTP_RPU_PASSWORD manquant (.env) : mot de passe du compte du concentrateur"

# --- the host key: fixed by the .env, so that the fingerprint given to establishments (and
# pinned in the rpu_inbox connection) survives a rebuild of the container.
(umask 077 && printf '%s' "$SFTP_HOST_KEY" | base64 -d > "$SSH_DIR/ssh_host_ed25519_key")
ssh-keygen -y -f "$SSH_DIR/ssh_host_ed25519_key" > "$SSH_DIR/ssh_host_ed25519_key.pub" \
  || die "SFTP_HOST_KEY illisible (attendu : clé OpenSSH en base64)"
say "clé d'hôte : $(ssh-keygen -l -f "$SSH_DIR/ssh_host_ed25519_key.pub")"

# --- the concentrator's account
getent group sftp-depot >/dev/null || groupadd -g "$SHARED_ID" sftp-depot
getent group etablissements >/dev/null || groupadd etablissements
id rpu >/dev/null 2>&1 || useradd -M -d / -s /usr/sbin/nologin -u "$SHARED_ID" -g sftp-depot rpu
printf 'rpu:%s\n' "$SFTP_RPU_PASSWORD" | chpasswd
unset SFTP_RPU_PASSWORD SFTP_HOST_KEY

install -d -o root -g root -m 0755 "$ROOT" "$KEYS_DIR"
rm -f "$KEYS_DIR"/*

# --- one account per establishment
declare -A wanted=()
accounts="$CONF_DIR/comptes.conf"
[ -f "$accounts" ] || say "$accounts absent : aucun compte d'établissement"
while read -r finess hash _ || [ -n "${finess:-}" ]; do
  case "${finess:-}" in ''|'#'*) continue ;; esac
  finess=${finess^^}
  [[ "$finess" =~ ^[0-9][0-9AB][0-9]{7}$ ]] || die "comptes.conf : FINESS invalide « $finess »"
  user="e${finess,,}"
  wanted[$user]=1
  install -d -o root -g root -m 0755 "$ROOT/$finess"
  for folder in depot traites rejetes attente rapports; do
    [ -d "$ROOT/$finess/$folder" ] || install -d -o "$SHARED_ID" -g "$SHARED_ID" -m 0750 "$ROOT/$finess/$folder"
  done
  id "$user" >/dev/null 2>&1 || useradd -M -o -u "$SHARED_ID" -g sftp-depot -G etablissements \
    -d "$ROOT/$finess" -s /usr/sbin/nologin "$user"
  methods=()
  if [ -n "${hash:-}" ]; then
    usermod -p "$hash" "$user"
    methods+=("mot de passe")
  else
    usermod -p '*' "$user"  # no password, but not locked: key authentication still works
  fi
  if [ -f "$CONF_DIR/cles/$finess.pub" ]; then
    install -o root -g root -m 0644 "$CONF_DIR/cles/$finess.pub" "$KEYS_DIR/$user"
    methods+=("clé")
  fi
  if [ ${#methods[@]} -eq 0 ]; then
    say "$user ($finess) : ni clé (cles/$finess.pub) ni mot de passe : personne ne peut s'y connecter"
  else
    say "$user ($finess) : ${methods[*]}"
  fi
done < <([ -f "$accounts" ] && cat "$accounts")

# Accounts removed from comptes.conf since the last start lose their access; their folder stays.
for user in $(getent group etablissements | cut -d: -f4 | tr ',' ' '); do
  if [ -z "${wanted[$user]:-}" ]; then
    userdel "$user" && say "$user : compte retiré (dossier conservé)"
  fi
done

/usr/sbin/sshd -t "$@" || die "configuration sshd invalide"
say "prêt : ${#wanted[@]} compte(s) d'établissement"
exec /usr/sbin/sshd -D -e "$@"
