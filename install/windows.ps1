# Registers (or removes) a Scheduled Task that runs the avatar-bridge daemon at logon and restarts it on
# failure. Usage: install\windows.ps1 -Config C:\path\config.toml [-Exe C:\path\avatar-bridge.exe] [-Remove] [-WhatIf]
[CmdletBinding(SupportsShouldProcess = $true)]
param(
    [string]$Config = "$env:APPDATA\avatar-bridge\config.toml",
    [string]$Exe = "",
    [switch]$Remove
)
$ErrorActionPreference = "Stop"
$TaskName = "avatar-bridge"

if ($Remove) {
    if (Get-ScheduledTask -TaskName $TaskName -ErrorAction SilentlyContinue) {
        if ($PSCmdlet.ShouldProcess($TaskName, "unregister scheduled task")) {
            Unregister-ScheduledTask -TaskName $TaskName -Confirm:$false
        }
    } else { Write-Host "no task $TaskName" }
    return
}
if (-not $Exe) {
    $here = Split-Path -Parent $MyInvocation.MyCommand.Path
    $candidate = Join-Path $here "..\.venv\Scripts\avatar-bridge.exe"
    if (Test-Path $candidate) { $Exe = (Resolve-Path $candidate).Path }
    elseif (Get-Command avatar-bridge -ErrorAction SilentlyContinue) { $Exe = (Get-Command avatar-bridge).Source }
    else { throw "avatar-bridge is not installed: run 'pip install -e .' in a venv first, or pass -Exe" }
}
if (-not (Test-Path $Config)) { throw "config $Config does not exist: write it first (see install/windows.md, step 5)" }

$action = New-ScheduledTaskAction -Execute $Exe -Argument "run --config `"$Config`""
$trigger = New-ScheduledTaskTrigger -AtLogOn -User $env:USERNAME
$settings = New-ScheduledTaskSettingsSet -RestartCount 999 -RestartInterval (New-TimeSpan -Minutes 1) `
    -ExecutionTimeLimit ([TimeSpan]::Zero) -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries
if ($PSCmdlet.ShouldProcess($TaskName, "register scheduled task running $Exe")) {
    Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger -Settings $settings -Force | Out-Null
    Write-Host "registered: starts at logon. Start now: Start-ScheduledTask -TaskName $TaskName"
}
